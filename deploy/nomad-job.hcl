# The proxy as a sidecar task in the application's group; the app uses 127.0.0.1:3306
# (bridge networking shares the group's network namespace).
job "app" {
  group "app" {
    network {
      mode = "bridge"
      port "metrics" { to = 9307 } # the proxy's read-only metrics_listen endpoint
    }

    task "consul-mysql-proxy" {
      driver = "docker"
      lifecycle {
        hook    = "prestart"
        sidecar = true
      }
      config {
        image = "consul-mysql-proxy:latest"
      }
      env {
        CONSUL_MYSQL_PROXY_LISTEN         = "127.0.0.1:3306"
        CONSUL_HTTP_ADDR                  = "http://${attr.unique.network.ip-address}:8500"
        CONSUL_MYSQL_PROXY_DISCOVERY      = "consul-health"
        CONSUL_MYSQL_PROXY_SERVICE        = "mysql"
        CONSUL_MYSQL_PROXY_LOG_FORMAT     = "json"
        CONSUL_MYSQL_PROXY_METRICS_LISTEN = "0.0.0.0:9307"
      }
      template {
        # Token from Vault or Nomad variables, never in the job file.
        data        = "CONSUL_HTTP_TOKEN={{ with nomadVar \"nomad/jobs/app\" }}{{ .consul_token }}{{ end }}"
        destination = "secrets/consul.env"
        env         = true
      }
      service {
        name     = "app-mysql-proxy"
        provider = "nomad"
        check {
          type     = "script"
          command  = "/usr/local/bin/consul-mysql-proxy"
          args     = ["healthcheck"]
          interval = "5s"
          timeout  = "3s"
        }
      }
      # Prometheus finds it with nomad_sd_configs (keep services tagged `prometheus`; path
      # /metrics). The status page is at / on the same port.
      service {
        name     = "app-mysql-proxy-metrics"
        provider = "nomad"
        port     = "metrics"
        tags     = ["prometheus"]
      }
      resources {
        cpu    = 100
        memory = 64
      }
    }

    task "app" {
      driver = "docker"
      config { image = "example/app:latest" }
      env { DATABASE_URL = "mysql://app@127.0.0.1:3306/app" }
    }
  }
}
