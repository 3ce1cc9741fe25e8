"""Tools the model may call: MCP servers over stdio and the built-in tools, behind one interface.
"""
