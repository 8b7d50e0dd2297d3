"""Jobs: every generation runs as a job in a bounded queue, one worker per device."""
