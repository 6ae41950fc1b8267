"""Tests of the embedded local server, its terminal views and the command line."""
