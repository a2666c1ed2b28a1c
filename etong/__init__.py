"""etong: the Ping'an E-Tong bridge between grid members' handhelds and officers' terminals."""

__version__ = "0.1.0"
