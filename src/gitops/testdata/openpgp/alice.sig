-----BEGIN PGP SIGNATURE-----

iIgEABYIADAWIQRmviXj2TsevtlEdIpQjCiha43unAUCaw8oExIcYWxpY2VAZXhh
bXBsZS5jb20ACgkQUIwooWuN7pxffQEAo++moWGNkbbdozphnPCQ8L6sqbKxGnjf
+WfzcNq2hLwBANUrIP/oKo238TLays4nuAg+H3y6zaeuFcbIspGsPHsO
=rw1R
-----END PGP SIGNATURE-----
