"""The pure core: webhook bodies -> ticket events -> lifecycle transitions -> rule decisions.

No I/O here: the rules file, who is who, working-time calendars, and the simulator that
runs the same decisions on a virtual clock.
"""
