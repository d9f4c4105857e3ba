// A Java service as a user would write it (pgJDBC, Debian's libpostgresql-jdbc-java):
// one multi-host URL with targetServerType=primary, inserts into a sync table
// through qsync's SQL port (even ids in autocommit, odd ids in a transaction
// of their own), reconnecting after an error. Prints "connected PORT" (the
// PostgreSQL port behind the node it reached) on each connection, "ok ID" for
// each acknowledged write and "err ID SQLSTATE message" for each failed one,
// until SECONDS have passed.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.Properties;

public class JdbcWriter {
  public static void main(String[] args) throws Exception {
    String url = args[0];
    Properties props = new Properties();
    props.setProperty("user", args[1]);
    props.setProperty("password", args[2]);
    props.setProperty("connectTimeout", "5");
    long first = Long.parseLong(args[3]);
    long deadline = System.nanoTime() + (long) (Double.parseDouble(args[4]) * 1e9);
    Connection conn = null;
    for (long i = first; System.nanoTime() < deadline; i++) {
      try {
        if (conn == null) {
          conn = DriverManager.getConnection(url, props);
          try (ResultSet port = conn.createStatement().executeQuery("SHOW port")) {
            port.next();
            System.out.println("connected " + port.getString(1));
          }
        }
        boolean own = i % 2 == 1;
        conn.setAutoCommit(!own);
        try (PreparedStatement insert = conn.prepareStatement("INSERT INTO accounts VALUES (?, 'jdbc', 0)")) {
          insert.setLong(1, i);
          insert.executeUpdate();
        }
        if (own) conn.commit();
        System.out.println("ok " + i);
      } catch (SQLException error) {
        String message = error.getMessage() == null ? "" : error.getMessage().split("\n")[0];
        System.out.println("err " + i + " " + error.getSQLState() + " " + message);
        try {
          if (conn != null) conn.close();
        } catch (SQLException ignored) {
          // gone already
        }
        conn = null;
        Thread.sleep(50);
      }
      System.out.flush();
    }
    if (conn != null) conn.close();
  }
}
