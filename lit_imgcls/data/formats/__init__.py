"""Packed-shard formats: WebDataset tar shards and FFCV .beton files (writers and DataModules)."""
