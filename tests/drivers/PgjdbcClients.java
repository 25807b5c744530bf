// pgjdbc through pgvalet as DBeaver and JDBC applications use it: verify-full TLS with the CA,
// the client certificate and its key as PKCS#8 DER (orders.pk8), no password. Three connections
// share one table: named server-side statements, a batch of 1000, a transaction, and an error
// in the middle of a transaction followed by a rollback. In transaction mode the route has two
// backend connections for the three clients, so each client's statements must follow it from
// one backend connection to the other.
//
//     javac -cp /usr/share/java/postgresql.jar -d OUT PgjdbcClients.java
//     java -cp OUT:/usr/share/java/postgresql.jar PgjdbcClients PORT PKI_DIR USER DATABASE session|transaction [PROPERTY=VALUE...]
//
// PROPERTY=VALUE arguments are added to the connection properties.
//
// Exits non-zero on the first result that is not what Postgres gives directly.

import java.sql.BatchUpdateException;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Properties;
import java.util.Set;

public final class PgjdbcClients {
    private static final int CLIENTS = 3;
    private static final int ROUNDS = 12;
    private static final int BATCH = 1000;

    private PgjdbcClients() {}

    private static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    private interface SqlAction {
        void run() throws SQLException;
    }

    /** Runs `action`, which must fail with `sqlState`. */
    private static void expectState(String sqlState, SqlAction action) throws SQLException {
        try {
            action.run();
        } catch (SQLException e) {
            check(sqlState.equals(e.getSQLState()),
                    "expected SQLSTATE " + sqlState + ", got " + e.getSQLState() + ": " + e.getMessage());
            return;
        }
        throw new AssertionError("expected SQLSTATE " + sqlState + ", the statement succeeded");
    }

    private static long one(Connection c, String sql) throws SQLException {
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(sql)) {
            check(rs.next(), "no row from " + sql);
            long v = rs.getLong(1);
            check(!rs.next(), "more than one row from " + sql);
            return v;
        }
    }

    /** How many statements prepared on the backend this connection uses now contain `marker`. */
    private static long preparedHere(Connection c, String marker) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(
                "select count(*) from pg_prepared_statements where strpos(statement, ?) > 0")) {
            ps.setString(1, marker);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                return rs.getLong(1);
            }
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 5) {
            System.err.println("usage: PgjdbcClients PORT PKI_DIR USER DATABASE session|transaction [PROPERTY=VALUE...]");
            System.exit(2);
        }
        String port = args[0], pki = args[1], user = args[2], db = args[3], mode = args[4];
        boolean txnMode = mode.equals("transaction");
        String table = "pgjdbc_" + mode;
        String url = "jdbc:postgresql://127.0.0.1:" + port + "/" + db;
        Properties props = new Properties();
        props.setProperty("user", user);
        props.setProperty("sslmode", "verify-full");
        props.setProperty("sslrootcert", pki + "/ca.crt");
        props.setProperty("sslcert", pki + "/orders.crt");
        props.setProperty("sslkey", pki + "/orders.pk8");
        props.setProperty("ApplicationName", "pgjdbc-" + mode);
        for (int i = 5; i < args.length; i++) {
            String[] kv = args[i].split("=", 2);
            check(kv.length == 2, "not PROPERTY=VALUE: " + args[i]);
            props.setProperty(kv[0], kv[1]);
        }
        // The default prepareThreshold (5): each PreparedStatement runs unnamed four times, then
        // as a named server-side statement, as it does in applications.

        List<Connection> clients = new ArrayList<>();
        for (int i = 0; i < CLIENTS; i++) {
            clients.add(DriverManager.getConnection(url, props));
        }
        Connection a = clients.get(0), b = clients.get(1), c = clients.get(2);
        check(one(a, "select 1") == 1, "select 1");
        try (Statement s = a.createStatement()) {
            s.execute("drop table if exists " + table);
            s.execute("create table " + table + " (id int primary key, v text not null)");
        }

        // Named statements: each client reuses its PreparedStatement past the threshold. In
        // each round one client holds a transaction (a backend connection of its own in
        // transaction mode) while the others run theirs.
        List<PreparedStatement> doubles = new ArrayList<>();
        for (Connection conn : clients) {
            doubles.add(conn.prepareStatement("select ?::int * 2 as jdbc_double, pg_backend_pid()"));
        }
        List<Set<Integer>> pids = new ArrayList<>();
        for (int i = 0; i < CLIENTS; i++) {
            pids.add(new HashSet<>());
        }
        for (int round = 0; round < ROUNDS; round++) {
            int holder = round % CLIENTS;
            Connection h = clients.get(holder);
            h.setAutoCommit(false);
            check(one(h, "select 41 + 1") == 42, "holder's first statement");
            for (int i = 0; i < CLIENTS; i++) {
                PreparedStatement ps = doubles.get(i);
                ps.setInt(1, round * 10 + i);
                try (ResultSet rs = ps.executeQuery()) {
                    check(rs.next(), "no row from the named statement");
                    check(rs.getInt(1) == 2 * (round * 10 + i), "client " + i + " round " + round + ": " + rs.getInt(1));
                    pids.get(i).add(rs.getInt(2));
                }
            }
            if (round >= 5) {
                // Past the threshold the statement is a named one, prepared on the backend the
                // holder's transaction runs on, wherever pgjdbc first prepared it.
                check(preparedHere(h, "jdbc_double") >= 1,
                        "round " + round + ": the named statement is not prepared on the holder's backend");
            }
            h.commit();
            h.setAutoCommit(true);
        }
        Set<Integer> allPids = new HashSet<>();
        for (Set<Integer> p : pids) {
            allPids.addAll(p);
        }
        if (txnMode) {
            check(allPids.size() == 2, "transaction mode: " + CLIENTS + " clients should share 2 backends, saw " + allPids);
            boolean moved = false;
            for (Set<Integer> p : pids) {
                moved |= p.size() > 1;
            }
            check(moved, "transaction mode: no client's statement ran on more than one backend: " + pids);
        } else {
            for (Set<Integer> p : pids) {
                check(p.size() == 1, "session mode: a client changed backends: " + pids);
            }
            check(allPids.size() == CLIENTS, "session mode: clients share a backend: " + pids);
        }

        // A batch of 1000 inserts in autocommit. pgjdbc sends them as Bind/Execute pairs (it does
        // not rewrite them into one multi-row insert unless asked) and, in autocommit, a Sync
        // every few hundred, as it reads the answers so far: each Sync commits those before it,
        // and in transaction mode the next ones may run on another backend connection.
        try (PreparedStatement ins = b.prepareStatement("insert into " + table + " (id, v) values (?, ?)")) {
            for (int i = 1; i <= BATCH; i++) {
                ins.setInt(1, i);
                ins.setString(2, "row " + i);
                ins.addBatch();
            }
            int[] counts = ins.executeBatch();
            check(counts.length == BATCH, "batch counts: " + counts.length);
            for (int n : counts) {
                check(n == 1, "a batch insert reported " + n + " rows");
            }
        }
        // Another client sees them all.
        check(one(c, "select count(*) from " + table) == BATCH, "batch rows seen by another client");
        check(one(c, "select sum(id) from " + table) == (long) BATCH * (BATCH + 1) / 2, "batch ids");

        // A batch of 1000 in a transaction that fails on its 501st insert (a duplicate key): the
        // transaction is aborted, and after the rollback nothing of it stays.
        b.setAutoCommit(false);
        try (PreparedStatement ins = b.prepareStatement("insert into " + table + " (id, v) values (?, ?)")) {
            for (int i = 0; i < BATCH; i++) {
                ins.setInt(1, i == 500 ? 1 : 2000 + i);
                ins.setString(2, "bad batch");
                ins.addBatch();
            }
            try {
                ins.executeBatch();
                throw new AssertionError("the batch with a duplicate key succeeded");
            } catch (BatchUpdateException e) {
                check("23505".equals(e.getSQLState()), "batch error SQLSTATE " + e.getSQLState());
            }
        }
        expectState("25P02", () -> one(b, "select 1"));
        b.rollback();
        b.setAutoCommit(true);
        check(one(c, "select count(*) from " + table) == BATCH, "the failed batch left rows");

        // A transaction: its rows are invisible to others until commit, then visible.
        a.setAutoCommit(false);
        try (PreparedStatement ins = a.prepareStatement("insert into " + table + " (id, v) values (?, ?)")) {
            for (int i = 0; i < 10; i++) {
                ins.setInt(1, 5000 + i);
                ins.setString(2, "txn");
                check(ins.executeUpdate() == 1, "transaction insert");
            }
        }
        check(one(a, "select count(*) from " + table + " where v = 'txn'") == 10, "own rows inside the transaction");
        check(one(c, "select count(*) from " + table + " where v = 'txn'") == 0, "uncommitted rows visible to another client");
        a.commit();
        a.setAutoCommit(true);
        check(one(c, "select count(*) from " + table + " where v = 'txn'") == 10, "committed rows seen by another client");

        // An error in the middle of a transaction: 22012, then 25P02 until the rollback, then
        // nothing of the transaction stays and the connection works again.
        a.setAutoCommit(false);
        try (Statement s = a.createStatement()) {
            check(s.executeUpdate("insert into " + table + " (id, v) values (9000, 'doomed')") == 1, "doomed insert");
        }
        expectState("22012", () -> one(a, "select 1 / (select count(*) - count(*) from " + table + ")"));
        expectState("25P02", () -> one(a, "select 1"));
        try (PreparedStatement ps = a.prepareStatement("select ?::int")) {
            ps.setInt(1, 1);
            expectState("25P02", ps::executeQuery);
        }
        a.rollback();
        a.setAutoCommit(true);
        check(one(a, "select count(*) from " + table + " where id = 9000") == 0, "the rolled back row stayed");
        check(one(b, "select count(*) from " + table + " where id = 9000") == 0, "the rolled back row stayed (other client)");
        PreparedStatement again = doubles.get(0);
        for (int i = 0; i < 3; i++) {
            again.setInt(1, 21);
            try (ResultSet rs = again.executeQuery()) {
                check(rs.next() && rs.getInt(1) == 42, "the named statement after the rollback");
            }
        }
        // An error in autocommit mode leaves nothing behind either.
        expectState("42P01", () -> one(b, "select count(*) from no_such_table"));
        check(one(b, "select count(*) from " + table) == BATCH + 10, "rows at the end");

        try (Statement s = a.createStatement()) {
            s.execute("drop table " + table);
        }
        String version = a.getMetaData().getDriverVersion();
        for (PreparedStatement ps : doubles) {
            ps.close();
        }
        for (Connection conn : clients) {
            conn.close();
        }
        System.out.println("pgjdbc " + version + " " + mode + ": " + CLIENTS + " clients on " + allPids.size()
                + " backend connections; named statements, batch of " + BATCH + ", transaction, error and rollback: ok");
    }
}
