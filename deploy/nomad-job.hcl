# The proxy as a sidecar task in the application's group; the app uses 127.0.0.1:3306
# (bridge networking shares the group's network namespace).
job "app" {
  group "app" {
    network { mode = "bridge" }

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
        CONSUL_MYSQL_PROXY_LISTEN     = "127.0.0.1:3306"
        CONSUL_HTTP_ADDR              = "http://${attr.unique.network.ip-address}:8500"
        CONSUL_MYSQL_PROXY_DISCOVERY  = "consul-health"
        CONSUL_MYSQL_PROXY_SERVICE    = "mysql"
        CONSUL_MYSQL_PROXY_LOG_FORMAT = "json"
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
