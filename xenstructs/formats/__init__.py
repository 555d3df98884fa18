"""Binary layouts (construct definitions) and text formats read by the dump hosts."""
