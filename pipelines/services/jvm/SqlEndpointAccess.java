package journeylake;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Properties;
import java.util.Set;
import org.apache.hadoop.security.UserGroupInformation;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.SparkSessionExtensions;
import org.apache.spark.sql.catalyst.FunctionIdentifier;
import org.apache.spark.sql.catalyst.QueryPlanningTracker;
import org.apache.spark.sql.catalyst.TableIdentifier;
import org.apache.spark.sql.catalyst.catalog.CatalogTable;
import org.apache.spark.sql.catalyst.expressions.CallMethodViaReflection;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.parser.ParameterContext;
import org.apache.spark.sql.catalyst.parser.ParseException;
import org.apache.spark.sql.catalyst.parser.ParserInterface;
import org.apache.spark.sql.catalyst.plans.logical.Command;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.connector.catalog.Identifier;
import org.apache.spark.sql.connector.catalog.Table;
import org.apache.spark.sql.internal.SessionState;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.StructType;
import scala.Function1;
import scala.Function2;
import scala.Option;
import scala.Product;
import scala.collection.Iterable;
import scala.collection.Iterator;
import scala.runtime.AbstractFunction1;
import scala.runtime.AbstractFunction2;
import scala.runtime.BoxedUnit;

/**
 * What each SQL endpoint user may read (spark.sql.extensions=journeylake.SqlEndpointAccess).
 *
 * <p>Every statement a JDBC session sends is parsed by Spark's SQL parser; this extension wraps
 * that parser, analyzes the statement as the session's user would run it and refuses it unless
 * the user's role allows everything it touches. Analyzing (not reading the text) is what makes
 * the check hold whatever the route: a table named with or without its schema after USE, a view
 * whose definition reads another schema, a subquery, EXPLAIN, DESCRIBE and SHOW.
 *
 * <p>Internal queries (Delta reading its own log, the metastore) are not parsed from SQL text, so
 * they never pass here. The session's user is Hadoop's current user: the Thrift server runs each
 * session's statements as that user (hive.server2.enable.doAs=true); the endpoint's own process
 * user is not restricted, a session user always is, even one whose name is the same.
 *
 * <p>Roles come from the file named by journeylake.sql.roles (java.util.Properties, written by
 * pipelines/services/sql_endpoint.py from conf/ at each start): {@code role.<r>.schemas},
 * {@code role.<r>.path_queries}, {@code role.<r>.read_only}, {@code role.<r>.settable}. A user's
 * role is the middle field of their line in the users file (journeylake.sql.users), read at each
 * statement so a changed role counts from the next one.
 */
public final class SqlEndpointAccess extends AbstractFunction1<SparkSessionExtensions, BoxedUnit> {
  static final String ROLES_PROPERTY = "journeylake.sql.roles";

  /** Statements a read-only role may run besides queries: they read the catalog, never write. */
  static final Set<String> READING_COMMANDS =
      new HashSet<>(
          Arrays.asList(
              "ShowTables", "ShowTablesCommand", "ShowTablesExtended", "ShowTablePartition",
              "ShowViews", "ShowViewsCommand", "ShowNamespaces", "ShowNamespacesCommand",
              "ShowColumns", "ShowColumnsCommand", "ShowTableProperties", "ShowTablePropertiesCommand",
              "ShowCreateTable", "ShowCreateTableCommand", "ShowFunctions", "ShowFunctionsCommand",
              "ShowCatalogsCommand", "ShowCurrentNamespaceCommand", "ShowCurrentNamespace",
              "DescribeRelation", "DescribeTableCommand", "DescribeColumn", "DescribeColumnCommand",
              "DescribeNamespace", "DescribeDatabaseCommand", "DescribeFunction",
              "DescribeFunctionCommand", "DescribeQueryCommand", "DescribeDeltaHistory",
              "DescribeDeltaDetailCommand", "DescribeDeltaHistoryCommand", "ShowDeltaTableColumnsCommand",
              "ShowDeltaPartitionsCommand", "ExplainCommand",
              "SetCatalogAndNamespace", "SetCatalogCommand", "SetNamespaceCommand", "SetCommand"));

  @Override
  public BoxedUnit apply(SparkSessionExtensions extensions) {
    Function2<SparkSession, ParserInterface, ParserInterface> builder =
        new AbstractFunction2<SparkSession, ParserInterface, ParserInterface>() {
          @Override
          public ParserInterface apply(SparkSession session, ParserInterface delegate) {
            return new CheckingParser(session, delegate);
          }
        };
    extensions.injectParser(builder);
    return BoxedUnit.UNIT;
  }

  /** A role as configured: the schemas it reads and what else it may do. */
  static final class Role {
    final String name;
    final Set<String> schemas = new LinkedHashSet<>();
    final Set<String> settable = new HashSet<>();
    boolean pathQueries;
    boolean readOnly = true;

    Role(String name) {
      this.name = name;
    }
  }

  /** The parser every session gets: Spark's own, plus the check of each statement. */
  static final class CheckingParser implements ParserInterface {
    private final SparkSession session;
    private final ParserInterface delegate;

    CheckingParser(SparkSession session, ParserInterface delegate) {
      this.session = session;
      this.delegate = delegate;
    }

    @Override
    public LogicalPlan parsePlan(String sqlText) throws ParseException {
      return checked(delegate.parsePlan(sqlText));
    }

    @Override
    public LogicalPlan parsePlanWithParameters(String sqlText, ParameterContext parameters)
        throws ParseException {
      return checked(delegate.parsePlanWithParameters(sqlText, parameters));
    }

    private LogicalPlan checked(LogicalPlan parsed) {
      Role role = sessionRole();
      // the analyzed plan goes on: Spark's own analysis returns a plan marked analyzed as it is,
      // so the statement is analyzed once, not twice
      return role == null ? parsed : new Check(session, role).statement(parsed);
    }

    @Override
    public Expression parseExpression(String sqlText) throws ParseException {
      return delegate.parseExpression(sqlText);
    }

    @Override
    public TableIdentifier parseTableIdentifier(String sqlText) throws ParseException {
      return delegate.parseTableIdentifier(sqlText);
    }

    @Override
    public FunctionIdentifier parseFunctionIdentifier(String sqlText) throws ParseException {
      return delegate.parseFunctionIdentifier(sqlText);
    }

    @Override
    public scala.collection.immutable.Seq<String> parseMultipartIdentifier(String sqlText)
        throws ParseException {
      return delegate.parseMultipartIdentifier(sqlText);
    }

    @Override
    public LogicalPlan parseQuery(String sqlText) throws ParseException {
      return delegate.parseQuery(sqlText); // a view's text, while a statement is analyzed
    }

    @Override
    public StructType parseRoutineParam(String sqlText) throws ParseException {
      return delegate.parseRoutineParam(sqlText);
    }

    @Override
    public StructType parseTableSchema(String sqlText) throws ParseException {
      return delegate.parseTableSchema(sqlText);
    }

    @Override
    public DataType parseDataType(String sqlText) throws ParseException {
      return delegate.parseDataType(sqlText);
    }
  }

  /**
   * The role of the session running this statement, or null for the endpoint's own process.
   * A session user missing from the users file (removed since they logged in) or naming a role
   * that does not exist may do nothing.
   */
  static Role sessionRole() {
    UserGroupInformation current;
    try {
      current = UserGroupInformation.getCurrentUser();
      if (current.equals(UserGroupInformation.getLoginUser())) {
        return null;
      }
    } catch (IOException e) {
      throw new SecurityException("journeylake: cannot tell which user runs this statement", e);
    }
    String user = current.getShortUserName();
    String roleName = roleOf(user);
    if (roleName == null) {
      throw new SecurityException("journeylake: " + user + " is no longer a SQL endpoint user");
    }
    Role role = roles().get(roleName);
    if (role == null) {
      throw new SecurityException(
          "journeylake: " + user + " has role '" + roleName + "', which conf/ does not define");
    }
    return role;
  }

  static String roleOf(String user) {
    List<String> lines;
    String file = System.getProperty(SqlEndpointAuth.USERS_PROPERTY);
    try {
      lines = Files.readAllLines(Paths.get(file), StandardCharsets.UTF_8);
    } catch (IOException | NullPointerException e) {
      throw new SecurityException("journeylake: cannot read the SQL endpoint's users file " + file);
    }
    for (String line : lines) {
      String[] parts = line.trim().split("\\s+");
      if (parts.length >= 2 && !parts[0].startsWith("#") && parts[0].equals(user)) {
        return parts.length == 3 ? parts[1] : System.getProperty(ROLES_PROPERTY + ".default", "");
      }
    }
    return null;
  }

  static java.util.Map<String, Role> roles() {
    String file = System.getProperty(ROLES_PROPERTY);
    Properties props = new Properties();
    try (InputStream in = Files.newInputStream(Paths.get(file))) {
      props.load(in);
    } catch (IOException | NullPointerException e) {
      throw new SecurityException("journeylake: cannot read the SQL endpoint's roles file " + file);
    }
    java.util.Map<String, Role> roles = new java.util.HashMap<>();
    for (String key : props.stringPropertyNames()) {
      String[] parts = key.split("\\.", 3);
      if (parts.length != 3 || !parts[0].equals("role")) {
        continue;
      }
      Role role = roles.computeIfAbsent(parts[1], Role::new);
      String value = props.getProperty(key).trim();
      switch (parts[2]) {
        case "schemas":
          for (String s : value.split(",")) {
            if (!s.isBlank()) role.schemas.add(s.trim().toLowerCase(Locale.ROOT));
          }
          break;
        case "settable":
          for (String s : value.split(",")) {
            if (!s.isBlank()) role.settable.add(s.trim().toLowerCase(Locale.ROOT));
          }
          break;
        case "path_queries":
          role.pathQueries = Boolean.parseBoolean(value);
          break;
        case "read_only":
          role.readOnly = Boolean.parseBoolean(value);
          break;
        default:
          break;
      }
    }
    return roles;
  }

  /** One statement's check against one role. */
  static final class Check {
    private final SparkSession session;
    private final Role role;

    Check(SparkSession session, Role role) {
      this.session = session;
      this.role = role;
    }

    LogicalPlan statement(LogicalPlan parsed) {
      SessionState state = session.sessionState();
      LogicalPlan analyzed =
          state.analyzer().executeAndCheck(parsed, new QueryPlanningTracker(Option.empty()));
      String kind = analyzed.getClass().getSimpleName();
      if (role.readOnly && analyzed instanceof Command && !READING_COMMANDS.contains(kind)) {
        refuse("runs " + kind + "; the " + role.name + " role only reads (queries, SHOW, DESCRIBE, EXPLAIN, USE, SET)");
      }
      if (kind.equals("SetCommand")) {
        setting(analyzed);
      }
      plan(analyzed);
      return analyzed;
    }

    /** Every node of the plan and of its subqueries, and the plans commands hold unanalyzed. */
    private void plan(LogicalPlan analyzed) {
      List<LogicalPlan> nodes = new ArrayList<>();
      analyzed.foreachWithSubqueries(
          new AbstractFunction1<LogicalPlan, BoxedUnit>() {
            @Override
            public BoxedUnit apply(LogicalPlan node) {
              nodes.add(node);
              return BoxedUnit.UNIT;
            }
          });
      for (LogicalPlan node : nodes) {
        node(node);
      }
    }

    private void node(LogicalPlan node) {
      String kind = node.getClass().getSimpleName();
      boolean named = false;
      Iterator<Object> fields = node.productIterator();
      while (fields.hasNext()) {
        named |= field(fields.next(), node, 0);
      }
      if (kind.equals("ResolvedNamespace")) {
        Object namespace = node.productElement(1);
        String name = namespace instanceof Iterable ? last((Iterable<?>) namespace) : null;
        named = true;
        if (name != null) { // none: the catalog itself, whose schemas SHOW DATABASES lists by name
          schema(name, "schema " + name);
        }
      }
      boolean reads =
          kind.equals("LogicalRelation")
              || kind.startsWith("DataSourceV2")
              || kind.startsWith("StreamingRelation")
              || holdsTable(node);
      if (reads && !named && !role.pathQueries) {
        refuse("reads files by path; the " + role.name + " role reads tables by name only");
      }
      scala.collection.Iterator<Expression> expressions = node.expressions().iterator();
      while (expressions.hasNext()) {
        expressions
            .next()
            .foreach(
                new AbstractFunction1<Expression, BoxedUnit>() {
                  @Override
                  public BoxedUnit apply(Expression e) {
                    if (e instanceof CallMethodViaReflection && role.readOnly) {
                      refuse("calls Java methods (reflect/java_method); the " + role.name + " role may not");
                    }
                    return BoxedUnit.UNIT;
                  }
                });
      }
    }

    /** Checks one field of a node; true when it named a table or schema. */
    private boolean field(Object value, LogicalPlan owner, int depth) {
      if (value == null || depth > 3) {
        return false;
      }
      if (value instanceof CatalogTable) {
        return field(((CatalogTable) value).identifier(), owner, depth + 1);
      }
      if (value instanceof Table) {
        // a table a command holds (Delta's DESCRIBE HISTORY holds a DeltaTableV2): named by its
        // catalog entry, which a table read by path does not have
        try {
          return field(value.getClass().getMethod("catalogTable").invoke(value), owner, depth + 1);
        } catch (ReflectiveOperationException e) {
          return false;
        }
      }
      if (value instanceof TableIdentifier) {
        TableIdentifier id = (TableIdentifier) value;
        String db = id.database().isDefined() ? id.database().get() : currentSchema();
        schema(db, db + "." + id.table());
        return true;
      }
      if (value instanceof Identifier) {
        Identifier id = (Identifier) value;
        String[] ns = id.namespace();
        String db = ns.length > 0 ? ns[ns.length - 1] : currentSchema();
        schema(db, db + "." + id.name());
        return true;
      }
      if (value instanceof LogicalPlan) {
        LogicalPlan inner = (LogicalPlan) value;
        if (!owner.children().contains(inner) && !inner.resolved()) {
          plan(session.sessionState().analyzer().executeAndCheck(inner, new QueryPlanningTracker(Option.empty())));
        } else if (!owner.children().contains(inner)) {
          plan(inner);
        }
        return false;
      }
      if (value instanceof Option) {
        Option<?> option = (Option<?>) value;
        return option.isDefined() && field(option.get(), owner, depth + 1);
      }
      if (value instanceof Iterable && !(value instanceof scala.collection.Map)) {
        boolean named = false;
        scala.collection.Iterator<?> items = ((Iterable<?>) value).iterator();
        for (int i = 0; items.hasNext() && i < 1000; i++) {
          named |= field(items.next(), owner, depth + 1);
        }
        return named;
      }
      if (value instanceof Product && value.getClass().getName().startsWith("scala.Tuple")) {
        boolean named = false;
        Iterator<Object> items = ((Product) value).productIterator();
        while (items.hasNext()) {
          named |= field(items.next(), owner, depth + 1);
        }
        return named;
      }
      return false;
    }

    private static boolean holdsTable(LogicalPlan node) {
      Iterator<Object> fields = node.productIterator();
      while (fields.hasNext()) {
        if (fields.next() instanceof Table) {
          return true;
        }
      }
      return false;
    }

    private void setting(LogicalPlan set) {
      Object kv = set.productElement(0); // Option[(key, Option[value])]
      if (!(kv instanceof Option) || !((Option<?>) kv).isDefined()) {
        return; // SET on its own lists the settings
      }
      Product pair = (Product) ((Option<?>) kv).get();
      Object value = pair.productElement(1);
      String key = String.valueOf(pair.productElement(0)).toLowerCase(Locale.ROOT);
      if (value instanceof Option && ((Option<?>) value).isDefined() && !role.settable.contains(key)) {
        refuse("sets " + key + "; the " + role.name + " role may set only " + String.join(", ", role.settable));
      }
    }

    private String currentSchema() {
      return session.sessionState().catalog().getCurrentDatabase();
    }

    private void schema(String name, String what) {
      if (name == null || !role.schemas.contains(name.toLowerCase(Locale.ROOT))) {
        refuse("reads " + what + "; the " + role.name + " role reads " + String.join(", ", role.schemas) + " only");
      }
    }

    private void refuse(String why) {
      throw new SecurityException("journeylake: access denied: this statement " + why);
    }
  }

  static String last(Iterable<?> items) {
    Object last = null;
    scala.collection.Iterator<?> it = items.iterator();
    while (it.hasNext()) {
      last = it.next();
    }
    return last == null ? null : String.valueOf(last);
  }
}
