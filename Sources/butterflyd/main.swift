import ButterflyControl

#if canImport(Glibc)
    import Glibc
#endif

exit(Daemon.main(arguments: Array(CommandLine.arguments.dropFirst())))
