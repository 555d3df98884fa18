"""xenscope's library: targets, x86 paging, decoders and analyses. Never imports gdb."""

__version__ = "0.1.0"
