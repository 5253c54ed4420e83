# Removal keeps /var/lib/virtdeck (database, certificate, keys); delete it by hand to forget them.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
