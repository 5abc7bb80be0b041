"""The pipedrive-sync command line and run orchestration."""
