// Readiness probe for kafka/broker.sh: exits 0 once the broker at args[0] answers a metadata request.
// args[2], optional: a client properties file (security settings of the secure broker's admin user).
// Compiled once by broker.sh into the cache dir and run with the broker's own jars on the classpath.
import java.io.FileInputStream;
import java.io.InputStream;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;

public final class Ready {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        int timeoutMs = args.length > 1 ? Integer.parseInt(args[1]) : 10_000;
        Properties props = new Properties();
        if (args.length > 2) {
            try (InputStream in = new FileInputStream(args[2])) {
                props.load(in);
            }
        }
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, Math.min(timeoutMs, 5_000));
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, timeoutMs);
        props.put(AdminClientConfig.RETRY_BACKOFF_MS_CONFIG, 100);
        try (Admin admin = Admin.create(props)) {
            int nodes = admin.describeCluster().nodes().get(timeoutMs, TimeUnit.MILLISECONDS).size();
            int topics = admin.listTopics().names().get(timeoutMs, TimeUnit.MILLISECONDS).size();
            System.out.println("metadata ok: " + nodes + " node(s), " + topics + " topic(s)");
        } catch (Exception e) {
            System.err.println("metadata request failed: " + e);
            System.exit(1);
        }
    }
}
