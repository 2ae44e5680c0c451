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
        Replication (cluster init, promote, status of a cluster) is not built yet: a node runs alone as primary.
        """,
        subcommands: [InitCommand.self, KeysCommand.self, StartCommand.self, VerifyCommand.self, MigrateCommand.self,
                      BenchCommand.self])
}
