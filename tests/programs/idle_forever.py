"""Sleeps until killed; prints "ready" once its interpreter is up."""
import time

print("ready", flush=True)
while True:
    time.sleep(1)
