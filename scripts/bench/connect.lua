-- A PHP-style client for sysbench: every event opens a new connection, runs one query and
-- closes it, so events per second are new connections per second through the target.
--
--   sysbench scripts/bench/connect.lua --db-driver=mysql --mysql-host=127.0.0.1 \
--     --mysql-port=PORT --mysql-user=U --mysql-password=P --threads=8 --time=20 run
--
-- The query is `SELECT 1` (no table needed, so no prepare step): what is measured is the TCP
-- handshake, the MySQL greeting and authentication, one round trip and the close (COM_QUIT).
-- A failed connect or query raises a Lua error, which ends sysbench with a non-zero exit: a
-- connection the target refuses is a result the harness reports, not one to retry silently.

sysbench.cmdline.options = {
   connect_query = {"Query run on each new connection", "SELECT 1"},
}

function thread_init()
   drv = sysbench.sql.driver()
end

function event()
   local con = drv:connect()
   con:query(sysbench.opt.connect_query)
   con:disconnect()
end

function thread_done()
   drv = nil
end
