"""In-process fakes of Google APIs that have no emulator; tests drive the real client libraries against them."""
