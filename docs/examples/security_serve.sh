# A token: 32 random bytes, readable by the server's user only.
head -c 32 /dev/urandom | base64 > token.txt && chmod 600 token.txt
# TLS on every listener, client certificates signed by ca.pem, and the token.
twistd -n agilerpc --interface 0.0.0.0 --port 9988 \
    --tls-cert server.pem --tls-key server.key \
    --tls-client-ca ca.pem \
    --auth-token-file token.txt
