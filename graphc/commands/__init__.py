"""One module per `graphc` command; each has HELP, add_arguments(parser) and run(args)."""
