"""Tests of scripts/, one file per script, mirroring that folder."""
