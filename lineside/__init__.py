"""Lineside: an offline, MQTT-native assistant for the shop floor."""

__version__ = "0.1.0"
