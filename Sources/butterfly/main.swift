import ButterflyCLI

#if canImport(Glibc)
    import Glibc
#endif

exit(CLI.main(arguments: Array(CommandLine.arguments.dropFirst())))
