"""Browser tests of the dashboard (Playwright + system Chromium)."""
