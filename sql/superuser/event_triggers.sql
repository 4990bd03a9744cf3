-- Installed by `covenant migrate` only when it runs as a superuser (CREATE
-- EVENT TRIGGER needs one); re-applied on every such run. Without a
-- superuser install there is no DDL guard, and `covenant migrate` says so.
-- (EXECUTE only because sqlfluff cannot parse CREATE EVENT TRIGGER.)
DO $event_triggers$
BEGIN
    EXECUTE 'DROP EVENT TRIGGER IF EXISTS covenant_ddl_guard';
    EXECUTE 'CREATE EVENT TRIGGER covenant_ddl_guard ON ddl_command_end '
        'EXECUTE FUNCTION covenant._ddl_guard()';
    EXECUTE 'DROP EVENT TRIGGER IF EXISTS covenant_drop_guard';
    EXECUTE 'CREATE EVENT TRIGGER covenant_drop_guard ON sql_drop '
        'EXECUTE FUNCTION covenant._ddl_guard()';
END
$event_triggers$;
