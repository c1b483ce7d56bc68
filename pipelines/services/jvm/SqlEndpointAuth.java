package journeylake;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.security.MessageDigest;
import java.security.spec.KeySpec;
import java.util.Base64;
import java.util.List;
import javax.crypto.SecretKeyFactory;
import javax.crypto.spec.PBEKeySpec;
import javax.security.sasl.AuthenticationException;
import org.apache.hive.service.auth.PasswdAuthenticationProvider;

/**
 * The SQL endpoint's user check (hive.server2.authentication=CUSTOM).
 *
 * Users live in the file named by the system property journeylake.sql.users, one per line:
 * {@code <user> <role> pbkdf2_sha256$<iterations>$<salt, base64>$<key, base64>} (the role is
 * optional here; SqlEndpointAccess reads it), written by
 * journeylake (pipelines/services/sql_users.py). The file is read at every login, so a user added
 * or removed counts from the next connection without a restart. Passwords are never stored.
 */
public final class SqlEndpointAuth implements PasswdAuthenticationProvider {
  static final String USERS_PROPERTY = "journeylake.sql.users";

  @Override
  public void Authenticate(String user, String password) throws AuthenticationException {
    String file = System.getProperty(USERS_PROPERTY);
    if (file == null || file.isEmpty()) {
      throw new AuthenticationException("the SQL endpoint has no users file (" + USERS_PROPERTY + ")");
    }
    if (user == null || password == null || password.isEmpty()) {
      throw new AuthenticationException("a user name and password are required");
    }
    List<String> lines;
    try {
      lines = Files.readAllLines(Paths.get(file), StandardCharsets.UTF_8);
    } catch (IOException e) {
      throw new AuthenticationException("cannot read the SQL endpoint's users file " + file, e);
    }
    for (String line : lines) {
      String[] parts = line.trim().split("\\s+");
      if (parts.length < 2 || parts.length > 3 || parts[0].startsWith("#") || !parts[0].equals(user)) {
        continue;
      }
      if (matches(parts[parts.length - 1], password)) {
        return;
      }
      break;
    }
    throw new AuthenticationException("unknown user or wrong password for " + user);
  }

  static boolean matches(String stored, String password) throws AuthenticationException {
    String[] fields = stored.split("\\$");
    if (fields.length != 4 || !fields[0].equals("pbkdf2_sha256")) {
      return false;
    }
    try {
      int iterations = Integer.parseInt(fields[1]);
      byte[] salt = Base64.getDecoder().decode(fields[2]);
      byte[] expected = Base64.getDecoder().decode(fields[3]);
      KeySpec spec = new PBEKeySpec(password.toCharArray(), salt, iterations, expected.length * 8);
      byte[] actual = SecretKeyFactory.getInstance("PBKDF2WithHmacSHA256").generateSecret(spec).getEncoded();
      return MessageDigest.isEqual(expected, actual);
    } catch (IllegalArgumentException e) {
      return false;
    } catch (java.security.GeneralSecurityException e) {
      throw new AuthenticationException("cannot check the password: " + e.getMessage(), e);
    }
  }
}
