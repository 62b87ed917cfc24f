"""The core: the VP-SDE and the flow of an eps-network, and the argument checks every floor uses."""
