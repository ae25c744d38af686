"""Holds secrets under names `--redact` masks by default, and plain values
beside them, in every place pydeep reads values from: a function's locals
(thread "holder", blocked), module globals, a dict's str keys, an
instance's attributes, and its own command line (--token VALUE).

Usage: secrets.py READY_FILE [--token VALUE]
"""
import sys
import threading

API_TOKEN = "tok-global-s3cr3t"
plain_global = "visible-global"
config = {"db_password": "hunter2-in-dict", "user": "visible-user"}


class Account:
    def __init__(self):
        self.secret_key = "sk-in-attribute"
        self.owner = "visible-owner"


account = Account()
arrived = threading.Event()


def holder():
    password = "hunter2-local"
    greeting = "visible-local"
    arrived.set()
    threading.Event().wait()
    return password, greeting


threading.Thread(target=holder, name="holder", daemon=True).start()
arrived.wait()
open(sys.argv[1], "w").close()
threading.Event().wait()
