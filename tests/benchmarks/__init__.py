"""Tests of benchmarks/, one file per script, mirroring that folder."""
