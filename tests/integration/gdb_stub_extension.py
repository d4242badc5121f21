"""A stand-in for pwndbg or GEF in the same gdb (neither is installable on the test machines):
what such an extension does that could disturb s2cache's -- its own commands, a handler on
every stop that reads registers and memory through gdb (pwndbg's context), handlers on
continue and before each prompt, a prompt hook and changed settings.  tests/integration/
test_gdbext.py sources it before gdbplugin/gdbext.py."""
import gdb

STOPS = []


def on_stop(event):
    frame = gdb.selected_frame()
    pc = int(frame.pc())
    word = bytes(gdb.selected_inferior().read_memory(pc, 4))
    regs = gdb.execute("info registers x0 sp", to_string=True)
    STOPS.append(pc)
    gdb.write(f"stub-context: stop {len(STOPS)} pc {pc:#x} insn {word.hex()} "
              f"({len(regs.splitlines())} registers)\n")


def on_cont(event):
    gdb.write("stub-context: continuing\n")


class StubContext(gdb.Command):
    """stubctx: what the stand-in saw."""

    def __init__(self):
        super().__init__("stubctx", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        gdb.write(f"stub-context: {len(STOPS)} stop(s) seen\n")


gdb.events.stop.connect(on_stop)
gdb.events.cont.connect(on_cont)
gdb.events.before_prompt.connect(lambda: None)
gdb.prompt_hook = lambda current: "stub> "
gdb.execute("set print pretty on")
gdb.execute("set disassemble-next-line on")
StubContext()
