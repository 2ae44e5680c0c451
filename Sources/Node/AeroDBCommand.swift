// The `aerodb` executable.

import ArgumentParser

@main
struct AeroDBCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aerodb",
        abstract: "AeroDB: a replicated Backend-as-a-Service appliance (one binary per node).",
        discussion: """
        Quick start:
          aerodb init --dir ./node1          # create a node directory with keys
          aerodb start --dir ./node1         # run it (HTTP on 127.0.0.1:54321)
          aerodb keys --dir ./node1 --json   # the anon and service_role keys
        A three-node cluster on one machine:
          aerodb cluster init --dir ./c --nodes 3
          aerodb start --dir ./c/n1 & aerodb start --dir ./c/n2 & aerodb start --dir ./c/n3 &
          aerodb status --url http://127.0.0.1:54321 --dir ./c/n1
          aerodb promote --url http://127.0.0.1:54322 --dir ./c/n2     # after n1 failed
        """,
        version: BuildInfo.line,
        subcommands: [InitCommand.self, KeysCommand.self, StartCommand.self, VerifyCommand.self, MigrateCommand.self,
                      BenchCommand.self, ClusterCommand.self, StatusCommand.self, PromoteCommand.self,
                      SwitchoverCommand.self, RejoinCommand.self, FunctionsCommand.self,
                      BackupCommand.self, RestoreCommand.self, LogsCommand.self])
}
