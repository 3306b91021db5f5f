"""Shared foundations: errors and exit codes, config, logging, allow-lists, binding fixes."""
