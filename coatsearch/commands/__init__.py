"""The command line's parts below `coatsearch.cli`: what every command shares (common),
the network commands (nets) and the prepared-data commands (data)."""
