# The state directory for the service and the shell tools (kept when the package is removed).
install -d -m 0700 /var/lib/virtdeck
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    echo "virtdeck is installed. Start it: systemctl enable --now virtdeck; then create the first admin: virtdeck setup-link"
else
    # An upgrade: a running service restarts into the new binary (the database is copied
    # before new migrations apply).
    systemctl try-restart virtdeck.service >/dev/null 2>&1 || :
fi
