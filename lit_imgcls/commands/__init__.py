"""One module per subcommand, each one typed function whose docstring is its --help."""
