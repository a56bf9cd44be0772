import gi
gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib
t = Gio.TestDBus.new(Gio.TestDBusFlags.NONE)
t.up()
addr = t.get_bus_address()
c = Gio.DBusConnection.new_for_address_sync(addr, Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION, None, None)
r = c.call_sync("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "ListNames", None, GLib.VariantType("(as)"), 0, 5000, None)
names = r.unpack()[0]
c2 = Gio.bus_get_sync(Gio.BusType.SESSION, None)
print("OK", addr, "org.freedesktop.DBus" in names, c2.get_unique_name())
c.close_sync(None); c2.close_sync(None); del c2; import gc; gc.collect()
t.down()
print("DOWN")
