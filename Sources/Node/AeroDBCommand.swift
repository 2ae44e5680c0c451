// The `aerodb` executable.

import ArgumentParser

@main
struct AeroDBCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aerodb",
        abstract: "AeroDB: a replicated Backend-as-a-Service appliance (one binary per node).",
        discussion: """
        Examples (one node):
          aerodb init --dir ./node1            # a node directory with keys
          aerodb start --dir ./node1           # HTTP on 127.0.0.1:54321
          aerodb keys --dir ./node1 --json     # the anon and service_role keys
        A three-node cluster on one machine (in a clone: scripts/dev):
          aerodb cluster init --dir ./c --nodes 3
          for n in n1 n2 n3; do aerodb start --dir ./c/$n 2>./c/$n.log & done
          aerodb status --url http://127.0.0.1:54321 --dir ./c/n1
          aerodb promote --url http://127.0.0.1:54322 --dir ./c/n1   # n1 failed
        Every command and flag: docs/OPERATIONS.md.
        """,
        version: BuildInfo.line,
        subcommands: [InitCommand.self, KeysCommand.self, StartCommand.self, VerifyCommand.self, MigrateCommand.self,
                      BenchCommand.self, ClusterCommand.self, StatusCommand.self, PromoteCommand.self,
                      SwitchoverCommand.self, RejoinCommand.self, FunctionsCommand.self, ConfigCommand.self,
                      BackupCommand.self, RestoreCommand.self, ArchiveCommand.self, LogsCommand.self, AuthCommand.self,
                      StorageCommand.self])
}
