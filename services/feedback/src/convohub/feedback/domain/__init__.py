"""Pure feedback decisions.

No I/O, no SQLAlchemy, no FastStream, no clock reads: time is passed in.
"""
