"""Composition package: settings, database engine and sessions, the Flask app
factory, the CLI and the scheduler wiring. It may import every other package."""
