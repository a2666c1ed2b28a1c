"""The developer's kit: the demo, the simulated terminals and a private mosquitto.

Everything here stands on the terminals' side of the wire contract (DESIGN §2) or runs the
daemon as a subprocess; none of it is part of the bridge. The daemon never imports this package
(`tests/unit/test_devkit_imports.py` checks it): only the `etong demo` and `etong simulate`
verbs load it, when they run.

- `messages`: valid and invalid messages as the terminals write them, no broker
- `client`: the one paho client of every simulated terminal, on the bridge's broker settings
- `terminals`: grid-member handhelds, officer terminals, a monitor
- `outbox`: the handheld's outbox rule (re-send until a receipt), pure
- `roster`: the ids a simulation takes from a roster
- `mosquitto`: a private mosquitto process
- `localbridge`: the daemon as a private subprocess, and the TOML files it needs
- `demo`, `demo_scenario`, `demo_show`: `etong demo`
- `simulate`: `etong simulate`
"""
