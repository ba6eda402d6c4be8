# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_pgsense_pg_global_optspecs
    string join \n c/config= v/verbose q/quiet ?/help h/host= p/port= d/dbname= service= U/username= password-file= sslmode= sslrootcert= sslcert= sslkey= schema= table= connect-timeout= stall-timeout= V/version
end

function __fish_pgsense_pg_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_pgsense_pg_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_pgsense_pg_using_subcommand
    set -l cmd (__fish_pgsense_pg_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c pgsense-pg -n "__fish_pgsense_pg_needs_command" -s c -l config -d 'Read [alerts.postgres] from this TOML file (the scanner\'s own config file works unchanged)' -r -F
complete -c pgsense-pg -n "__fish_pgsense_pg_needs_command" -s h -l host -d 'Server host name, IP address, or Unix socket directory; a comma-separated list is tried in order, as libpq does, and an empty entry is the default [config: host, env: PGHOST, default: localhost]' -r -f -a "(__fish_print_hostnames)"
complete -c pgsense-pg -n "__fish_pgsense_pg_needs_command" -s p -l port -d 'Server port, or one port per host, comma-separated; an empty entry is the default [config: port, env: PGPORT, default: 5432]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_needs_command" -s d -l dbname -d 'Database holding the findings table, or a libpq connection string (`host=db dbname=findings`) or URI (`postgresql://user@db/findings`), as psql takes; the other flags override its parts [config: dbname, env: PGDATABASE, default: postgres]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_needs_command" -l service -d 'A service of libpq\'s pg_service.conf whose settings are used (after the flags, the config file and --dbname\'s) [env: PGSERVICE]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_needs_command" -s U -l username -d 'Role to connect as [config: username, env: PGUSER, default: postgres]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_needs_command" -l password-file -d 'Read the password from this file (trailing whitespace trimmed) [config: password, env: PGPASSWORD, then PGPASSFILE or ~/.pgpass]' -r -F
complete -c pgsense-pg -n "__fish_pgsense_pg_needs_command" -l sslmode -d 'TLS mode, as libpq\'s sslmode; `allow` acts as `prefer` [config: tls.mode or tls.enabled, env: PGSSLMODE, default: prefer]' -r -f -a "disable\t'No TLS'
allow\t'The same as prefer (libpq tries without TLS first, then with it)'
prefer\t'TLS when the server offers it; its certificate is not checked'
require\t'TLS required; the server\'s certificate is not checked'
verify-ca\t'TLS required; the server\'s certificate must come from a trusted CA (the host name is not checked)'
verify-full\t'TLS required; the server\'s certificate must come from a trusted CA and name the host (DNS name or IP address)'"
complete -c pgsense-pg -n "__fish_pgsense_pg_needs_command" -l sslrootcert -d 'CA certificates (PEM) that verify-ca and verify-full trust instead of the system\'s; `system` for the system\'s [config: tls.trusted_root_certs, env: PGSSLROOTCERT, default: system]' -r -F
complete -c pgsense-pg -n "__fish_pgsense_pg_needs_command" -l sslcert -d 'Client certificate (PEM) to present, for `cert` authentication [config: tls.client_cert, env: PGSSLCERT]' -r -F
complete -c pgsense-pg -n "__fish_pgsense_pg_needs_command" -l sslkey -d 'Private key of --sslcert (PEM: PKCS#8, or PKCS#1 RSA) [config: tls.client_key, env: PGSSLKEY]' -r -F
complete -c pgsense-pg -n "__fish_pgsense_pg_needs_command" -l schema -d 'Schema of the findings table [config: schema, default: pgsense]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_needs_command" -l table -d 'Name of the findings table [config: table, default: findings]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_needs_command" -l connect-timeout -d 'Give up connecting (TCP, TLS and authentication) to a host after this many seconds [env: PGCONNECT_TIMEOUT, default: 10]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_needs_command" -l stall-timeout -d 'Give up on a server that leaves one statement unanswered this many seconds: cancel it, then shut the connection down (a stopped server never answers a cancel) and go on as after a lost connection' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_needs_command" -s v -l verbose -d 'Log more: -v for info, -vv for debug, -vvv for trace (RUST_LOG, when set, takes precedence)'
complete -c pgsense-pg -n "__fish_pgsense_pg_needs_command" -s q -l quiet -d 'Print only errors: no per-line reasons, no summary'
complete -c pgsense-pg -n "__fish_pgsense_pg_needs_command" -s ? -l help -d 'Print help'
complete -c pgsense-pg -n "__fish_pgsense_pg_needs_command" -s V -l version -d 'Print version'
complete -c pgsense-pg -n "__fish_pgsense_pg_needs_command" -f -a "load" -d 'Create the schema and table if missing, then insert findings from FILEs or stdin'
complete -c pgsense-pg -n "__fish_pgsense_pg_needs_command" -f -a "init" -d 'Create the schema and table if missing, and report what was found or created; loads nothing'
complete -c pgsense-pg -n "__fish_pgsense_pg_needs_command" -f -a "check" -d 'Check, without writing anything, that a load would succeed: the connection, the table and its columns, and the grants; prints the GRANT that fixes what is missing'
complete -c pgsense-pg -n "__fish_pgsense_pg_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -l max-line-bytes -d 'Reject lines longer than this many bytes (the \\r of a CRLF ending and a UTF-8 BOM before a file\'s first line count, the \\n does not), without holding them in memory whole' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -l reject-file -d 'Append every dropped line there, byte for byte as read, so that `pgsense-pg load PATH` replays them once the cause is fixed' -r -F
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -l summary -d 'At the end, print a summary on stdout in this format' -r -f -a "json\t'One JSON object'"
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -l metrics-file -d 'Write the run\'s counters to PATH in Prometheus text format, atomically (for node_exporter\'s textfile collector)' -r -F
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -l max-rejects -d 'Stop reading (exit 65) once more than N lines have been rejected (rows the server refuses count once their batch commits, when the batches already read are loaded too)' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -l state-file -d 'Remember in PATH how far each FILE has been loaded, and start after that point next time (for cron over a file that keeps growing); a replaced or truncated file is loaded from its start, and an unterminated last line of a plain file is left for the next run. Each batch is recorded in PATH.journal before it commits, so that the run after a crash loads nothing twice (PATH.lock keeps two runs apart; a symbolic link is followed to the file it leads to)' -r -F
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -l settle -d 'Settle by hand a batch of a stopped run whose outcome the server cannot tell (the error names its transaction and lines): `committed` when its findings are in the table, `aborted` when they are not, and the run goes on from there. Only for that transaction, and only when the server cannot answer; may be given more than once' -r -f
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -l flush-interval -d 'With --follow, commit lines at most this many seconds after they were appended (lines that come faster go in full batches anyway)' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -l retry-for -d 'Retry a failing database (connection lost, server restarting, too many connections, deadlock) for up to this many seconds before dropping the findings it holds; 0 disables retries. --follow retries without a limit' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -l batch-rows -d 'Send at most this many rows in one transaction' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -l batch-bytes -d 'Send at most about this many bytes of row data in one transaction' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -s c -l config -d 'Read [alerts.postgres] from this TOML file (the scanner\'s own config file works unchanged)' -r -F
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -s h -l host -d 'Server host name, IP address, or Unix socket directory; a comma-separated list is tried in order, as libpq does, and an empty entry is the default [config: host, env: PGHOST, default: localhost]' -r -f -a "(__fish_print_hostnames)"
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -s p -l port -d 'Server port, or one port per host, comma-separated; an empty entry is the default [config: port, env: PGPORT, default: 5432]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -s d -l dbname -d 'Database holding the findings table, or a libpq connection string (`host=db dbname=findings`) or URI (`postgresql://user@db/findings`), as psql takes; the other flags override its parts [config: dbname, env: PGDATABASE, default: postgres]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -l service -d 'A service of libpq\'s pg_service.conf whose settings are used (after the flags, the config file and --dbname\'s) [env: PGSERVICE]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -s U -l username -d 'Role to connect as [config: username, env: PGUSER, default: postgres]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -l password-file -d 'Read the password from this file (trailing whitespace trimmed) [config: password, env: PGPASSWORD, then PGPASSFILE or ~/.pgpass]' -r -F
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -l sslmode -d 'TLS mode, as libpq\'s sslmode; `allow` acts as `prefer` [config: tls.mode or tls.enabled, env: PGSSLMODE, default: prefer]' -r -f -a "disable\t'No TLS'
allow\t'The same as prefer (libpq tries without TLS first, then with it)'
prefer\t'TLS when the server offers it; its certificate is not checked'
require\t'TLS required; the server\'s certificate is not checked'
verify-ca\t'TLS required; the server\'s certificate must come from a trusted CA (the host name is not checked)'
verify-full\t'TLS required; the server\'s certificate must come from a trusted CA and name the host (DNS name or IP address)'"
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -l sslrootcert -d 'CA certificates (PEM) that verify-ca and verify-full trust instead of the system\'s; `system` for the system\'s [config: tls.trusted_root_certs, env: PGSSLROOTCERT, default: system]' -r -F
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -l sslcert -d 'Client certificate (PEM) to present, for `cert` authentication [config: tls.client_cert, env: PGSSLCERT]' -r -F
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -l sslkey -d 'Private key of --sslcert (PEM: PKCS#8, or PKCS#1 RSA) [config: tls.client_key, env: PGSSLKEY]' -r -F
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -l schema -d 'Schema of the findings table [config: schema, default: pgsense]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -l table -d 'Name of the findings table [config: table, default: findings]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -l connect-timeout -d 'Give up connecting (TCP, TLS and authentication) to a host after this many seconds [env: PGCONNECT_TIMEOUT, default: 10]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -l stall-timeout -d 'Give up on a server that leaves one statement unanswered this many seconds: cancel it, then shut the connection down (a stopped server never answers a cancel) and go on as after a lost connection' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -l dry-run -d 'Parse and validate the input with the rules of a real load, report the same way (the lines a real load would insert as "would be inserted"), and connect to nothing (--state-file, --reject-file and --metrics-file are left untouched)'
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -l follow -d 'Keep running after the end of each FILE, loading lines as they are appended, as `tail -F` does: a FILE replaced by rotation (rename and create, or copy and truncate) is followed by name, after the lines left in the old one; a FILE that does not exist yet is waited for. Needs --state-file. The database is retried for as long as it takes (the files hold the lines meanwhile). Stop with SIGTERM or SIGINT'
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -s v -l verbose -d 'Log more: -v for info, -vv for debug, -vvv for trace (RUST_LOG, when set, takes precedence)'
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -s q -l quiet -d 'Print only errors: no per-line reasons, no summary'
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand load" -s ? -l help -d 'Print help'
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand init" -s c -l config -d 'Read [alerts.postgres] from this TOML file (the scanner\'s own config file works unchanged)' -r -F
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand init" -s h -l host -d 'Server host name, IP address, or Unix socket directory; a comma-separated list is tried in order, as libpq does, and an empty entry is the default [config: host, env: PGHOST, default: localhost]' -r -f -a "(__fish_print_hostnames)"
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand init" -s p -l port -d 'Server port, or one port per host, comma-separated; an empty entry is the default [config: port, env: PGPORT, default: 5432]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand init" -s d -l dbname -d 'Database holding the findings table, or a libpq connection string (`host=db dbname=findings`) or URI (`postgresql://user@db/findings`), as psql takes; the other flags override its parts [config: dbname, env: PGDATABASE, default: postgres]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand init" -l service -d 'A service of libpq\'s pg_service.conf whose settings are used (after the flags, the config file and --dbname\'s) [env: PGSERVICE]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand init" -s U -l username -d 'Role to connect as [config: username, env: PGUSER, default: postgres]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand init" -l password-file -d 'Read the password from this file (trailing whitespace trimmed) [config: password, env: PGPASSWORD, then PGPASSFILE or ~/.pgpass]' -r -F
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand init" -l sslmode -d 'TLS mode, as libpq\'s sslmode; `allow` acts as `prefer` [config: tls.mode or tls.enabled, env: PGSSLMODE, default: prefer]' -r -f -a "disable\t'No TLS'
allow\t'The same as prefer (libpq tries without TLS first, then with it)'
prefer\t'TLS when the server offers it; its certificate is not checked'
require\t'TLS required; the server\'s certificate is not checked'
verify-ca\t'TLS required; the server\'s certificate must come from a trusted CA (the host name is not checked)'
verify-full\t'TLS required; the server\'s certificate must come from a trusted CA and name the host (DNS name or IP address)'"
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand init" -l sslrootcert -d 'CA certificates (PEM) that verify-ca and verify-full trust instead of the system\'s; `system` for the system\'s [config: tls.trusted_root_certs, env: PGSSLROOTCERT, default: system]' -r -F
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand init" -l sslcert -d 'Client certificate (PEM) to present, for `cert` authentication [config: tls.client_cert, env: PGSSLCERT]' -r -F
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand init" -l sslkey -d 'Private key of --sslcert (PEM: PKCS#8, or PKCS#1 RSA) [config: tls.client_key, env: PGSSLKEY]' -r -F
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand init" -l schema -d 'Schema of the findings table [config: schema, default: pgsense]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand init" -l table -d 'Name of the findings table [config: table, default: findings]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand init" -l connect-timeout -d 'Give up connecting (TCP, TLS and authentication) to a host after this many seconds [env: PGCONNECT_TIMEOUT, default: 10]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand init" -l stall-timeout -d 'Give up on a server that leaves one statement unanswered this many seconds: cancel it, then shut the connection down (a stopped server never answers a cancel) and go on as after a lost connection' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand init" -s v -l verbose -d 'Log more: -v for info, -vv for debug, -vvv for trace (RUST_LOG, when set, takes precedence)'
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand init" -s q -l quiet -d 'Print only errors: no per-line reasons, no summary'
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand init" -s ? -l help -d 'Print help'
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand check" -s c -l config -d 'Read [alerts.postgres] from this TOML file (the scanner\'s own config file works unchanged)' -r -F
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand check" -s h -l host -d 'Server host name, IP address, or Unix socket directory; a comma-separated list is tried in order, as libpq does, and an empty entry is the default [config: host, env: PGHOST, default: localhost]' -r -f -a "(__fish_print_hostnames)"
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand check" -s p -l port -d 'Server port, or one port per host, comma-separated; an empty entry is the default [config: port, env: PGPORT, default: 5432]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand check" -s d -l dbname -d 'Database holding the findings table, or a libpq connection string (`host=db dbname=findings`) or URI (`postgresql://user@db/findings`), as psql takes; the other flags override its parts [config: dbname, env: PGDATABASE, default: postgres]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand check" -l service -d 'A service of libpq\'s pg_service.conf whose settings are used (after the flags, the config file and --dbname\'s) [env: PGSERVICE]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand check" -s U -l username -d 'Role to connect as [config: username, env: PGUSER, default: postgres]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand check" -l password-file -d 'Read the password from this file (trailing whitespace trimmed) [config: password, env: PGPASSWORD, then PGPASSFILE or ~/.pgpass]' -r -F
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand check" -l sslmode -d 'TLS mode, as libpq\'s sslmode; `allow` acts as `prefer` [config: tls.mode or tls.enabled, env: PGSSLMODE, default: prefer]' -r -f -a "disable\t'No TLS'
allow\t'The same as prefer (libpq tries without TLS first, then with it)'
prefer\t'TLS when the server offers it; its certificate is not checked'
require\t'TLS required; the server\'s certificate is not checked'
verify-ca\t'TLS required; the server\'s certificate must come from a trusted CA (the host name is not checked)'
verify-full\t'TLS required; the server\'s certificate must come from a trusted CA and name the host (DNS name or IP address)'"
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand check" -l sslrootcert -d 'CA certificates (PEM) that verify-ca and verify-full trust instead of the system\'s; `system` for the system\'s [config: tls.trusted_root_certs, env: PGSSLROOTCERT, default: system]' -r -F
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand check" -l sslcert -d 'Client certificate (PEM) to present, for `cert` authentication [config: tls.client_cert, env: PGSSLCERT]' -r -F
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand check" -l sslkey -d 'Private key of --sslcert (PEM: PKCS#8, or PKCS#1 RSA) [config: tls.client_key, env: PGSSLKEY]' -r -F
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand check" -l schema -d 'Schema of the findings table [config: schema, default: pgsense]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand check" -l table -d 'Name of the findings table [config: table, default: findings]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand check" -l connect-timeout -d 'Give up connecting (TCP, TLS and authentication) to a host after this many seconds [env: PGCONNECT_TIMEOUT, default: 10]' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand check" -l stall-timeout -d 'Give up on a server that leaves one statement unanswered this many seconds: cancel it, then shut the connection down (a stopped server never answers a cancel) and go on as after a lost connection' -r
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand check" -s v -l verbose -d 'Log more: -v for info, -vv for debug, -vvv for trace (RUST_LOG, when set, takes precedence)'
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand check" -s q -l quiet -d 'Print only errors: no per-line reasons, no summary'
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand check" -s ? -l help -d 'Print help'
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand help; and not __fish_seen_subcommand_from load init check help" -f -a "load" -d 'Create the schema and table if missing, then insert findings from FILEs or stdin'
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand help; and not __fish_seen_subcommand_from load init check help" -f -a "init" -d 'Create the schema and table if missing, and report what was found or created; loads nothing'
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand help; and not __fish_seen_subcommand_from load init check help" -f -a "check" -d 'Check, without writing anything, that a load would succeed: the connection, the table and its columns, and the grants; prints the GRANT that fixes what is missing'
complete -c pgsense-pg -n "__fish_pgsense_pg_using_subcommand help; and not __fish_seen_subcommand_from load init check help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
