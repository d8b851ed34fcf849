<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE TS>
<TS version="2.1" language="fr">
  <context>
    <name>RsTextSearch</name>
    <message>
      <source>Index raster layers</source>
      <translation>Indexer des couches raster</translation>
    </message>
    <message>
      <source>Indexing cuts each layer into tiles and embeds them once; searches are then instant. Online layers (XYZ, WMS) are indexed over the current map extent at the current scale.</source>
      <translation>L’indexation découpe chaque couche en tuiles et les encode une fois ; les recherches sont ensuite instantanées. Les couches en ligne (XYZ, WMS) sont indexées sur l’emprise actuelle de la carte, à l’échelle actuelle.</translation>
    </message>
    <message>
      <source>Index</source>
      <translation>Indexer</translation>
    </message>
    <message>
      <source>Select all</source>
      <translation>Tout cocher</translation>
    </message>
    <message>
      <source>Select none</source>
      <translation>Tout décocher</translation>
    </message>
    <message>
      <source>Install missing dependencies</source>
      <translation>Installer les dépendances manquantes</translation>
    </message>
    <message>
      <source>Install</source>
      <translation>Installer</translation>
    </message>
    <message>
      <source>Install…</source>
      <translation>Installer…</translation>
    </message>
    <message>
      <source>Describe what to find, e.g. parking lot with cars</source>
      <translation>Décrivez ce qu’il faut trouver, p. ex. parking avec des voitures</translation>
    </message>
    <message>
      <source>Search</source>
      <translation>Rechercher</translation>
    </message>
    <message>
      <source>top </source>
      <translation>les </translation>
    </message>
    <message>
      <source>How many tiles to return</source>
      <translation>Nombre de tuiles à renvoyer</translation>
    </message>
    <message>
      <source>any score</source>
      <translation>tout score</translation>
    </message>
    <message>
      <source>Hide tiles whose similarity to the query is below this value</source>
      <translation>Masquer les tuiles dont la similarité avec la requête est inférieure à cette valeur</translation>
    </message>
    <message>
      <source>Where to search</source>
      <translation>Où chercher</translation>
    </message>
    <message>
      <source>Refine</source>
      <translation>Affiner</translation>
    </message>
    <message>
      <source>Search again with the good results as examples and away from the bad ones</source>
      <translation>Relancer la recherche avec les bons résultats comme exemples, en s’éloignant des mauvais</translation>
    </message>
    <message>
      <source>Clear</source>
      <translation>Effacer</translation>
    </message>
    <message>
      <source>Forget the good and bad marks</source>
      <translation>Oublier les marques bon et mauvais</translation>
    </message>
    <message>
      <source>Keep results layer</source>
      <translation>Garder la couche de résultats</translation>
    </message>
    <message>
      <source>Keep this results layer on the map when the next search runs</source>
      <translation>Garder cette couche de résultats sur la carte lors de la prochaine recherche</translation>
    </message>
    <message>
      <source>Export results…</source>
      <translation>Exporter les résultats…</translation>
    </message>
    <message>
      <source>Index layers…</source>
      <translation>Indexer des couches…</translation>
    </message>
    <message>
      <source>Cut raster layers into tiles and embed them, so they can be searched</source>
      <translation>Découper les couches raster en tuiles et les encoder, pour pouvoir y chercher</translation>
    </message>
    <message>
      <source>Cancel</source>
      <translation>Annuler</translation>
    </message>
    <message>
      <source>Settings…</source>
      <translation>Paramètres…</translation>
    </message>
    <message>
      <source>Add to map</source>
      <translation>Ajouter à la carte</translation>
    </message>
    <message>
      <source>No raster layer in the project</source>
      <translation>Aucune couche raster dans le projet</translation>
    </message>
    <message>
      <source>All indexed layers</source>
      <translation>Toutes les couches indexées</translation>
    </message>
    <message>
      <source>Map extent only</source>
      <translation>Emprise de la carte seulement</translation>
    </message>
    <message>
      <source>Export results</source>
      <translation>Exporter les résultats</translation>
    </message>
    <message>
      <source>GeoPackage (*.gpkg)</source>
      <translation>GeoPackage (*.gpkg)</translation>
    </message>
    <message>
      <source>Type a description and press Enter. Results appear here and on the map.</source>
      <translation>Tapez une description et appuyez sur Entrée. Les résultats apparaissent ici et sur la carte.</translation>
    </message>
    <message>
      <source>Searching…</source>
      <translation>Recherche…</translation>
    </message>
    <message>
      <source>No model found: choose one in Settings</source>
      <translation>Aucun modèle trouvé : choisissez-en un dans les paramètres</translation>
    </message>
    <message>
      <source>Install the missing packages first</source>
      <translation>Installez d’abord les paquets manquants</translation>
    </message>
    <message>
      <source>Index a raster layer first</source>
      <translation>Indexez d’abord une couche raster</translation>
    </message>
    <message>
      <source>Find similar tiles</source>
      <translation>Trouver des tuiles semblables</translation>
    </message>
    <message>
      <source>Search every indexed layer for tiles that look like the tile under the cursor</source>
      <translation>Chercher dans toutes les couches indexées les tuiles qui ressemblent à celle sous le curseur</translation>
    </message>
    <message>
      <source>RS Text Search settings</source>
      <translation>Paramètres de RS Text Search</translation>
    </message>
    <message>
      <source>bundled model</source>
      <translation>modèle fourni</translation>
    </message>
    <message>
      <source>Model folder</source>
      <translation>Dossier du modèle</translation>
    </message>
    <message>
      <source>Auto (CUDA when it works, else CPU)</source>
      <translation>Auto (CUDA s’il fonctionne, sinon CPU)</translation>
    </message>
    <message>
      <source>CUDA (GPU)</source>
      <translation>CUDA (GPU)</translation>
    </message>
    <message>
      <source>CPU</source>
      <translation>CPU</translation>
    </message>
    <message>
      <source>Runs on</source>
      <translation>Exécution sur</translation>
    </message>
    <message>
      <source>automatic</source>
      <translation>automatique</translation>
    </message>
    <message>
      <source>Automatic: each tile covers the ground one of the model's training images covered (78 m for the bundled model: 78 px on 1 m imagery, 256 px on 0.3 m), measured from the layer's pixel size. A number: tiles of that many raster pixels.</source>
      <translation>Automatique : chaque tuile couvre au sol ce que couvrait une image d’entraînement du modèle (78 m pour le modèle fourni : 78 px sur une imagerie à 1 m, 256 px à 0,3 m), d’après la taille de pixel de la couche. Un nombre : des tuiles d’autant de pixels raster.</translation>
    </message>
    <message>
      <source>Tile size</source>
      <translation>Taille des tuiles</translation>
    </message>
    <message>
      <source>Tile overlap (fraction)</source>
      <translation>Recouvrement des tuiles (fraction)</translation>
    </message>
    <message>
      <source>A new tile size or overlap needs the layers indexed again; existing indexes are kept.</source>
      <translation>Une nouvelle taille de tuile ou un nouveau recouvrement demande d’indexer à nouveau les couches ; les index existants sont conservés.</translation>
    </message>
    <message>
      <source>RS Text Search panel</source>
      <translation>Panneau RS Text Search</translation>
    </message>
    <message>
      <source>Find similar tiles (click the map)</source>
      <translation>Trouver des tuiles semblables (cliquer sur la carte)</translation>
    </message>
    <message>
      <source>Click a tile on the map to find tiles that look like it</source>
      <translation>Cliquez sur une tuile de la carte pour trouver les tuiles qui lui ressemblent</translation>
    </message>
    <message>
      <source>Index raster layers…</source>
      <translation>Indexer des couches raster…</translation>
    </message>
    <message>
      <source>Help</source>
      <translation>Aide</translation>
    </message>
    <message>
      <source>Install missing dependencies…</source>
      <translation>Installer les dépendances manquantes…</translation>
    </message>
    <message>
      <source>Mark as good example</source>
      <translation>Marquer comme bon exemple</translation>
    </message>
    <message>
      <source>Mark as bad example</source>
      <translation>Marquer comme mauvais exemple</translation>
    </message>
    <message>
      <source>Clear mark</source>
      <translation>Effacer la marque</translation>
    </message>
    <message>
      <source>Zoom to tile</source>
      <translation>Zoomer sur la tuile</translation>
    </message>
    <message>
      <source>Copy tile id</source>
      <translation>Copier l’identifiant de la tuile</translation>
    </message>
  </context>
</TS>
