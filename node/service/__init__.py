"""The node's features as the loop sees them: command intake, on-air control, health reporting.

Each class here holds state owned by the node loop and calls the pure cores (node.trust, node.playback,
node.reporting, node.modem) and the adapters; none of them starts threads of its own except through an
adapter whose callbacks only post events.
"""
