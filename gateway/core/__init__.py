"""The pure access-decision core: no I/O, no clock, no framework imports.

Everything here is a function of its arguments; the current time is always a parameter.
"""
