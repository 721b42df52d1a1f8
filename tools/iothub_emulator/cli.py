def main(argv=None):
    raise SystemExit("iothub-emulator: not built yet")
