"""Gateway service: the device-facing side. Validates questions, routes them, answers."""
