"""The worker process: launcher, capsules, fetchers, acker, scheduler, heartbeat, reaper."""
