import ArgumentParser

@main
struct AeroDBCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "aerodb", abstract: "AeroDB node")
}
