def main(argv=None):
    raise SystemExit("iothub-tool: not built yet")
