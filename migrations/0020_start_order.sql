-- The order in which virtdeck starts the host's VMs when the host boots, and how long it
-- waits after each before the next. A VM with a start order has libvirt's own autostart
-- off: virtdeck starts it, in order, once per boot of the host.
CREATE TABLE vm_start_order (
    vm            TEXT PRIMARY KEY,
    position      INTEGER NOT NULL CHECK (position BETWEEN 1 AND 999),
    delay_seconds INTEGER NOT NULL CHECK (delay_seconds BETWEEN 0 AND 600)
);
