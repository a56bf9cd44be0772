"""sandbus-dbus-proxy: xdg-dbus-proxy's command line in front of Containers1
(proxy/main.py; docs/flatpak.md)."""
