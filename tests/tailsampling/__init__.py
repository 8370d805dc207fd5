"""Tests of the tail sampler's parts, each against real files and real loopback servers."""
