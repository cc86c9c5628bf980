"""Lineside message contracts: topics, typed messages and codecs shared by every service."""
