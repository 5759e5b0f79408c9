"""The demo: the CPA platform on throwaway servers, the daemon watching it, fault scenarios and a webhook sink.

Nothing in the product imports this package; it imports the daemon, the application and the sandbox.
"""
